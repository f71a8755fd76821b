//! The convergence chart: the selected layer's ranges calibrated on the first n batches
//! (n = 1, 2, 4, …, B; the JSON `convergence`), one line per method over a log₂ batch axis,
//! with the percentiles' 95% intervals at B, the loss each method's range from the first H
//! batches costs on all of them, and the verdict.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Borders, Cell, Chart, Dataset, GraphType, Paragraph, Row, Table, Wrap,
};

use super::status::{draw_header, draw_status};
use super::{fit, int_mark, panel, short_label};
use crate::analysis::validation::convergence::{MIN_BATCHES, STABLE_LOSS_DB};
use crate::analysis::validation::{Convergence, ConvergenceMethod, Verdict};
use crate::analysis::{LayerAnalysis, MethodResult};
use crate::report::fmt::num_short;
use crate::tui::app::App;
use crate::tui::layout::{self, ConvergenceAreas};

/// What the chart draws, in chart coordinates: x = log₂ n, y = a range end.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plot {
    pub x_bounds: [f64; 2],
    /// (log₂ n, n) for each batch count: the ticks carry the real counts.
    pub ticks: Vec<(f64, usize)>,
    /// The plotted values' extent, padded so that no line sits on the frame and equal values
    /// still give a non-empty axis.
    pub y_bounds: [f64; 2],
    /// Whether the low ends are drawn too. A symmetric range is [−a, a]: its low end only
    /// mirrors the high end and would double the y axis for nothing, so only a (the high end)
    /// is drawn. An affine range moves at both ends, each its own way, so both are drawn (two
    /// lines of the method's colour): |range| = hi − lo would hide which end moved.
    pub both_ends: bool,
    /// One per method of the convergence, in its order.
    pub methods: Vec<MethodPlot>,
    /// x of H, the prefix whose range the loss measures.
    pub half: Option<f64>,
}

/// One method's lines: finite points only (a non-finite range end is left out).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct MethodPlot {
    pub hi: Vec<(f64, f64)>,
    pub lo: Vec<(f64, f64)>,
    /// Percentiles: the 95% interval at n = B as a vertical segment, of the high end (and of
    /// the low end when both ends are drawn).
    pub intervals: Vec<[(f64, f64); 2]>,
}

/// Share of the plotted span added above and below.
const Y_PAD: f64 = 0.05;

/// The chart of a convergence; None when there is nothing finite to draw.
pub(crate) fn plot(c: &Convergence) -> Option<Plot> {
    let x_of = |n: usize| (n as f64).log2();
    let ticks: Vec<(f64, usize)> = c
        .batch_counts
        .iter()
        .map(|&n| (x_of(n), n))
        .filter(|(x, _)| x.is_finite())
        .collect();
    let finite = |p: &(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let both_ends = c.methods.iter().any(|m| {
        m.ranges
            .iter()
            .any(|&[lo, hi]| lo.is_finite() && hi.is_finite() && lo != -hi)
    });
    let x_b = x_of(c.batches());
    let methods: Vec<MethodPlot> = c
        .methods
        .iter()
        .map(|m| {
            let end = |i: usize| -> Vec<(f64, f64)> {
                c.batch_counts
                    .iter()
                    .zip(&m.ranges)
                    .map(|(&n, r)| (x_of(n), r[i]))
                    .filter(finite)
                    .collect()
            };
            let ends: &[usize] = if both_ends { &[0, 1] } else { &[1] };
            let intervals = m
                .interval_95
                .iter()
                .flat_map(|iv| ends.iter().map(move |&i| iv[i]))
                .map(|[a, b]| [(x_b, a), (x_b, b)])
                .filter(|s| s.iter().all(finite))
                .collect();
            MethodPlot {
                hi: end(1),
                lo: if both_ends { end(0) } else { Vec::new() },
                intervals,
            }
        })
        .collect();
    let ys = methods.iter().flat_map(|m| {
        m.hi.iter()
            .chain(&m.lo)
            .chain(m.intervals.iter().flatten())
            .map(|p| p.1)
    });
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    if lo > hi {
        return None;
    }
    let span = hi - lo;
    let pad = if span > 0.0 {
        span * Y_PAD
    } else if hi != 0.0 {
        hi.abs() * Y_PAD
    } else {
        1.0
    };
    // Clamped: a span past f64::MAX must not make an infinite bound.
    let y_bounds = [(lo - pad).max(f64::MIN), (hi + pad).min(f64::MAX)];
    let (x0, x1) = ticks
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), t| {
            (a.min(t.0), b.max(t.0))
        });
    // One batch count (or none) still gets an axis of one doubling.
    let x_bounds = if x0 < x1 {
        [x0, x1]
    } else if x0.is_finite() {
        [x0, x0 + 1.0]
    } else {
        [0.0, 1.0]
    };
    let half = c.half().map(x_of).filter(|x| x.is_finite());
    Some(Plot {
        x_bounds,
        ticks,
        y_bounds,
        both_ends,
        methods,
        half,
    })
}

/// The column (from the graph's left edge) where ratatui's Chart draws x in a graph `width`
/// columns wide with braille dots (two per column; see `canvas::Painter::get_point`).
fn column(x: f64, bounds: [f64; 2], width: u16) -> Option<u16> {
    let span = bounds[1] - bounds[0];
    if width == 0 || span.is_nan() || span <= 0.0 || !x.is_finite() {
        return None;
    }
    let dots = f64::from(width) * 2.0 - 1.0;
    let dot = ((x - bounds[0]) / span * dots).round();
    (0.0..=dots)
        .contains(&dot)
        .then_some((dot / 2.0).floor() as u16)
}

/// Where ratatui's Chart puts the graph in an area `width` wide whose y labels are at most
/// `label_w` wide (its `layout`: the labels take at most a third, the y axis one column when
/// one is left): (the graph's first column, its width, the y axis column).
fn graph_columns(width: u16, label_w: u16) -> (u16, u16, Option<u16>) {
    let x = label_w.min(width / 3);
    let axis = (x + 1 < width).then_some(x);
    let left = x + u16::from(axis.is_some());
    (left, width.saturating_sub(left), axis)
}

/// Labels of the ticks as (first column, text), left to right: the first and last count
/// always, the others where they fit one space apart.
pub(crate) fn tick_labels(plot: &Plot, width: u16) -> Vec<(u16, String)> {
    let n = plot.ticks.len();
    let order = (0..n.min(1))
        .chain((1..n).rev().take(1))
        .chain(1..n.saturating_sub(1));
    let mut placed: Vec<(u16, String)> = Vec::new();
    for i in order {
        let (x, count) = plot.ticks[i];
        let Some(col) = column(x, plot.x_bounds, width) else {
            continue;
        };
        let text = count.to_string();
        let len = text.chars().count() as u16;
        if len > width {
            continue;
        }
        let start = col.saturating_sub((len - 1) / 2).min(width - len);
        let clear = placed
            .iter()
            .all(|(s, t)| start > s + t.chars().count() as u16 || start + len < *s);
        if clear {
            placed.push((start, text));
        }
    }
    placed.sort();
    placed
}

pub(super) fn draw(frame: &mut Frame, app: &App, size: Rect) {
    let methods = app
        .selected_layer()
        .and_then(|l| l.convergence.as_ref())
        .map_or(0, |c| c.methods.len());
    let a = layout::convergence_areas(size, methods);
    draw_header(frame, app, a.header);
    draw_status(frame, app, a.status);
    draw_body(frame, app, &a);
}

/// Why a layer has no chart.
fn missing(app: &App, layer: &LayerAnalysis) -> String {
    if !app.opts.validate {
        return format!("run with --validate: convergence needs the batches (≥ {MIN_BATCHES})");
    }
    layer
        .notes
        .iter()
        .find(|n| n.contains("convergence"))
        .cloned()
        .unwrap_or_else(|| "no convergence for this layer".into())
}

/// The method row (index into the layer's methods) of a convergence method.
fn row_of<'a>(
    layer: &'a LayerAnalysis,
    m: &ConvergenceMethod,
) -> Option<(usize, &'a MethodResult)> {
    let label = m.label();
    layer
        .methods
        .iter()
        .enumerate()
        .find(|(_, r)| r.label() == label)
}

fn color_of(layer: &LayerAnalysis, m: &ConvergenceMethod) -> Color {
    row_of(layer, m).map_or(Color::Gray, |(i, _)| int_mark(&layer.methods, i).1)
}

fn verdict_color(v: Verdict) -> Color {
    match v {
        Verdict::Stable => Color::Green,
        Verdict::Growing => Color::Red,
        Verdict::TooFewBatches => Color::Yellow,
    }
}

/// A loss in dB as the table shows it: two decimals (the detail sentence's), ∞ for a range
/// that is exact only with all batches, — when undefined.
fn loss_text(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.is_infinite() {
        if v > 0.0 { "∞".into() } else { "-∞".into() }
    } else {
        format!("{v:.2}")
    }
}

fn loss_color(v: f64) -> Color {
    if v.is_nan() {
        Color::DarkGray
    } else if v >= STABLE_LOSS_DB {
        Color::Red
    } else {
        Color::Reset
    }
}

pub(crate) fn draw_body(frame: &mut Frame, app: &App, a: &ConvergenceAreas) {
    let layer = app.selected_layer();
    let conv = layer.and_then(|l| l.convergence.as_ref());
    let plotted = conv.and_then(plot);
    let both = plotted.as_ref().is_some_and(|p| p.both_ends);
    let what = if both {
        "low and high ends vs batches"
    } else {
        "range vs batches"
    };
    let name = app
        .selected
        .map(|i| app.names.full(i, usize::from(a.title.width / 3)))
        .unwrap_or_default();
    let mut title = vec![Span::raw(format!(" convergence {name} "))];
    title.push(Span::styled(
        format!("· {what} (log₂) "),
        Style::new().fg(Color::DarkGray),
    ));
    frame.render_widget(panel(Line::from(title), true, Borders::TOP), a.title);
    let body = a.verdict.union(a.table);
    let msg = match (app.selected_slot(), layer) {
        (None, _) => Some("no layer selected".to_string()),
        (Some(_), None) => Some("reading…".into()),
        (Some(_), Some(l)) if l.error.is_some() => Some("this layer could not be read".into()),
        (Some(_), Some(l)) if l.convergence.is_none() => Some(missing(app, l)),
        _ => None,
    };
    let (Some(layer), Some(conv), None) = (layer, conv, msg.as_ref()) else {
        let text = msg.unwrap_or_default();
        frame.render_widget(
            Paragraph::new(text)
                .fg(Color::DarkGray)
                .wrap(Wrap { trim: true }),
            body,
        );
        return;
    };
    let verdict = Line::from(vec![
        Span::styled(
            conv.verdict.name(),
            Style::new().fg(verdict_color(conv.verdict)).bold(),
        ),
        Span::raw(" · "),
        Span::raw(conv.detail.clone()),
    ]);
    frame.render_widget(Paragraph::new(verdict).wrap(Wrap { trim: true }), a.verdict);
    let sel = app.selected_row_key().and_then(|(name, p)| {
        conv.methods
            .iter()
            .position(|m| m.method.name() == name && m.percentile == p)
    });
    match &plotted {
        Some(p) => draw_chart(frame, layer, conv, p, sel, a),
        None => frame.render_widget(
            Paragraph::new("no finite range to draw").fg(Color::DarkGray),
            a.chart,
        ),
    }
    draw_table(frame, layer, conv, sel, both, a.table);
}

fn draw_chart(
    frame: &mut Frame,
    layer: &LayerAnalysis,
    conv: &Convergence,
    p: &Plot,
    sel: Option<usize>,
    a: &ConvergenceAreas,
) {
    let [y0, y1] = p.y_bounds;
    // Halves first: (y0 + y1) / 2 overflows for bounds near ±f64::MAX.
    let y_labels = [num_short(y0), num_short(y0 / 2.0 + y1 / 2.0), num_short(y1)];
    let label_w = y_labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0) as u16;
    let (left, width, axis_col) = graph_columns(a.chart.width, label_w);
    // The H marker below the lines, the selected method on top with its checkpoints as dots.
    let half: Vec<(f64, f64)> = p.half.map_or(Vec::new(), |x| vec![(x, y0), (x, y1)]);
    let mut datasets = vec![
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::DarkGray))
            .data(&half),
    ];
    let order = (0..p.methods.len())
        .filter(|&i| Some(i) != sel)
        .chain(sel.filter(|&i| i < p.methods.len()));
    for i in order {
        let (m, color) = (&p.methods[i], color_of(layer, &conv.methods[i]));
        let line = |data| {
            Dataset::default()
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::new().fg(color))
                .data(data)
        };
        datasets.push(line(&m.hi));
        datasets.push(line(&m.lo));
        datasets.extend(m.intervals.iter().map(|s| line(s)));
        if Some(i) == sel {
            for d in [&m.hi, &m.lo] {
                datasets.push(
                    Dataset::default()
                        .marker(Marker::Dot)
                        .graph_type(GraphType::Scatter)
                        .style(Style::new().fg(color).bold())
                        .data(d),
                );
            }
        }
    }
    let chart = Chart::new(datasets)
        .x_axis(Axis::default().bounds(p.x_bounds))
        .y_axis(
            Axis::default()
                .bounds(p.y_bounds)
                .labels(y_labels)
                .style(Style::new().fg(Color::DarkGray)),
        );
    frame.render_widget(chart, a.chart);
    // The x axis by hand: ratatui spreads its labels evenly, which would not put 12 where 12
    // is on a log axis; here each count stands under its point.
    let x = |c: u16| a.axis.x.saturating_add(left).saturating_add(c);
    let mut line: Vec<char> = vec![' '; usize::from(a.axis.width)];
    if let Some(c) = axis_col.filter(|&c| c < a.axis.width) {
        line[usize::from(c)] = '└';
    }
    for c in left..a.axis.width {
        line[usize::from(c)] = '─';
    }
    for &(t, _) in &p.ticks {
        if let Some(c) = column(t, p.x_bounds, width)
            && let Some(ch) = line.get_mut(usize::from(left + c))
        {
            *ch = '┴';
        }
    }
    let dim = Style::new().fg(Color::DarkGray);
    frame.render_widget(
        Paragraph::new(line.into_iter().collect::<String>()).style(dim),
        a.axis,
    );
    if let Some(c) = p.half.and_then(|h| column(h, p.x_bounds, width))
        && x(c) < a.axis.right()
    {
        frame.render_widget(
            Paragraph::new("H").style(Style::new().fg(Color::Yellow).bold()),
            Rect::new(x(c), a.axis.y, 1, a.axis.height.min(1)),
        );
    }
    let mut ticks = String::new();
    let origin = usize::from(left);
    for (c, t) in tick_labels(p, width) {
        let at = origin + usize::from(c);
        let pad = at.saturating_sub(ticks.chars().count());
        ticks.push_str(&" ".repeat(pad));
        ticks.push_str(&t);
    }
    frame.render_widget(Paragraph::new(ticks).style(dim), a.ticks);
}

fn draw_table(
    frame: &mut Frame,
    layer: &LayerAnalysis,
    conv: &Convergence,
    sel: Option<usize>,
    both: bool,
    area: Rect,
) {
    let wide = area.width >= 110;
    let b = conv.batches();
    let h = conv.half();
    let h_at = h.and_then(|h| conv.batch_counts.iter().position(|&n| n == h));
    let one = conv.batch_counts.first().copied().unwrap_or(1);
    let mut header: Vec<String> = vec![String::new(), "method".into()];
    if wide {
        header.extend([format!("lo@{one}"), format!("hi@{one}")]);
        if let Some(h) = h {
            header.extend([format!("lo@{h}"), format!("hi@{h}")]);
        }
    }
    header.extend([
        format!("lo@{b}"),
        format!("hi@{b}"),
        "loss dB".into(),
        "95% interval at B".into(),
    ]);
    let label_w = 12usize;
    let n = conv.methods.len();
    let rows_h = usize::from(area.height.saturating_sub(1));
    let first = layout::scroll_start(sel.unwrap_or(0), rows_h, n);
    let rows = conv
        .methods
        .iter()
        .enumerate()
        .skip(first)
        .take(rows_h)
        .map(|(i, m)| {
            let (tag, color, star, label) = match row_of(layer, m) {
                Some((j, r)) => (
                    int_mark(&layer.methods, j).0,
                    int_mark(&layer.methods, j).1,
                    if layer.is_recommended(r) { "★" } else { " " },
                    short_label(r),
                ),
                None => ('?', Color::Gray, " ", m.label()),
            };
            let range = |k: Option<usize>, end: usize| {
                k.and_then(|k| m.ranges.get(k))
                    .map_or_else(|| "—".to_string(), |r| num_short(r[end]))
            };
            let mut cells = vec![
                Cell::from(tag.to_string()).style(Style::new().fg(color).bold()),
                Cell::from(fit(&format!("{star}{label}"), label_w)).style(Style::new().fg(color)),
            ];
            if wide {
                cells.extend([Cell::from(range(Some(0), 0)), Cell::from(range(Some(0), 1))]);
                if h.is_some() {
                    cells.extend([Cell::from(range(h_at, 0)), Cell::from(range(h_at, 1))]);
                }
            }
            let last = m.ranges.len().checked_sub(1);
            let loss = m.half_range_sqnr_loss_db;
            let interval = m.interval_95.map_or(String::new(), |[l, u]| {
                let s = |[a, b]: [f64; 2]| format!("{}…{}", num_short(a), num_short(b));
                if both && wide {
                    format!("lo {} hi {}", s(l), s(u))
                } else {
                    s(u)
                }
            });
            cells.extend([
                Cell::from(range(last, 0)),
                Cell::from(range(last, 1)),
                Cell::from(loss_text(loss)).style(Style::new().fg(loss_color(loss))),
                Cell::from(interval),
            ]);
            let row = Row::new(cells);
            if Some(i) == sel {
                row.style(Style::new().bg(Color::Blue).add_modifier(Modifier::BOLD))
            } else {
                row
            }
        });
    let mut widths = vec![Constraint::Length(1), Constraint::Length(label_w as u16)];
    let ranges = if wide {
        2 + 2 * usize::from(h.is_some()) + 2
    } else {
        2
    };
    widths.extend(std::iter::repeat_n(Constraint::Length(9), ranges));
    widths.extend([Constraint::Length(7), Constraint::Min(0)]);
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray).bold()))
        .column_spacing(1);
    frame.render_widget(table, area);
}
