//! The channel view: the selected layer's per-channel absmax as bars over the channel index
//! (log scale, outlier channels red, zoomable around a cursor) and the granularity table
//! (per tensor, token, channel, block, and the outliers kept in float) with the SQNR colours of
//! the method table.

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Borders, Cell, Paragraph, Row, Table};

use super::status::{draw_header, draw_status};
use super::{panel, sqnr_color};
use crate::analysis::LayerAnalysis;
use crate::analysis::metrics::Metrics;
use crate::report::fmt::{count_short, db_short, num_short};
use crate::tui::app::App;
use crate::tui::layout::{self, channel_column, channel_window};

const EIGHTHS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// The lowest the log scale reaches, as a share of the largest (six decades).
const LOG_FLOOR: f64 = 1e-6;

pub(super) fn draw(frame: &mut Frame, app: &App, size: Rect) {
    let a = layout::channel_areas(size);
    draw_header(frame, app, a.header);
    draw_status(frame, app, a.status);
    let slot = app.selected_slot();
    let layer = app.selected_layer();
    let absmax = slot
        .and_then(|s| s.profile.as_ref())
        .and_then(|p| p.channels.as_ref())
        .map(|c| c.absmax.clone());
    let dim = Style::new().fg(Color::DarkGray);
    let mut title = vec![Span::raw(format!(
        " channels {} ",
        app.selected
            .map(|i| app.names.full(i, usize::from(a.title.width / 4)))
            .unwrap_or_default()
    ))];
    let summary = layer.and_then(|l| l.channels.as_ref());
    let Some(absmax) = absmax.filter(|v| !v.is_empty()) else {
        frame.render_widget(panel(Line::from(title), true, Borders::TOP), a.title);
        let msg = match (slot, layer) {
            (Some(_), Some(l)) if l.error.is_some() => "this layer could not be read",
            (Some(_), None) => "reading…",
            (Some(_), Some(_)) => {
                "no channel axis (a 0-d or 1-D layer, or see the notes): only the per-tensor row"
            }
            (None, _) => "no layer selected",
        };
        frame.render_widget(Paragraph::new(msg).fg(Color::DarkGray), a.chart);
        draw_table(frame, app, layer, a.table);
        return;
    };
    let n = absmax.len();
    let cursor = app.channel_cursor.min(n - 1);
    let cols = usize::from(a.chart.width);
    let (first, span) = channel_window(n, cursor, app.channel_zoom, cols);
    let shown = cols.min(span);
    let outliers: &[usize] = summary.map_or(&[], |c| c.outliers.as_slice());
    let is_outlier = |a: usize, b: usize| {
        let i = outliers.partition_point(|&o| o < a);
        outliers.get(i).is_some_and(|&o| o < b)
    };
    let v = f64::from(absmax[cursor]);
    let mut at = format!("· ch {cursor}: {}", num_short(v));
    if let Some(c) = summary.filter(|c| c.absmax_median > 0.0) {
        at.push_str(&format!(" = {}× median", num_short(v / c.absmax_median)));
    }
    let cursor_outlier = is_outlier(cursor, cursor + 1);
    title.push(Span::styled(
        at,
        Style::new().fg(if cursor_outlier {
            Color::Red
        } else {
            Color::Yellow
        }),
    ));
    if app.channel_zoom > 0 {
        title.push(Span::styled(
            format!(" · zoom {first}..{}", first + span - 1),
            Style::new().fg(Color::Cyan),
        ));
    }
    if let Some(c) = summary {
        title.push(Span::styled(
            format!(
                " · axis {} · {n} channels · median {} · {} outlier{}",
                c.axis,
                num_short(c.absmax_median),
                c.outliers.len(),
                if c.outliers.len() == 1 { "" } else { "s" }
            ),
            dim,
        ));
    }
    title.push(Span::raw(" "));
    frame.render_widget(panel(Line::from(title), true, Borders::TOP), a.title);
    // Per column: the largest absmax of its channels (so an outlier is never averaged away).
    let columns: Vec<(f64, bool, bool)> = (0..shown)
        .map(|col| {
            let (lo, hi) = channel_column(first, span, col, cols);
            let m = absmax[lo..hi].iter().copied().fold(0.0f32, f32::max);
            (f64::from(m), is_outlier(lo, hi), (lo..hi).contains(&cursor))
        })
        .collect();
    let top = columns.iter().map(|c| c.0).fold(0.0, f64::max);
    // The scale starts at half the smallest nonzero column (at most six decades down), so
    // the ordinary channels stay low and the outliers stand out.
    let least = columns
        .iter()
        .map(|c| c.0)
        .filter(|&v| v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let threshold = summary.map(|c| c.absmax_median * app.opts.granularity.outlier_ratio);
    let floor = (least / 2.0).max(top * LOG_FLOOR);
    draw_bars(
        frame.buffer_mut(),
        a.chart,
        &columns,
        (floor, top),
        threshold,
    );
    // The axis: first and last channel in view, and the cursor under its column.
    let mut axis = vec![' '; usize::from(a.axis.width)];
    let mut put = |x: usize, s: &str| {
        for (i, c) in s.chars().enumerate() {
            if let Some(slot) = axis.get_mut(x + i) {
                *slot = c;
            }
        }
    };
    let last = (first + span - 1).to_string();
    put(0, &first.to_string());
    put(shown.saturating_sub(last.len()), &last);
    if let Some(col) = columns.iter().position(|c| c.2) {
        let label = format!("▲{cursor}");
        put(col.min(shown.saturating_sub(label.chars().count())), &label);
    }
    frame.render_widget(
        Paragraph::new(axis.into_iter().collect::<String>()).fg(Color::DarkGray),
        a.axis,
    );
    draw_table(frame, app, layer, a.table);
}

/// The bars in eighth blocks on a log scale over `(floor, top)`; outlier columns red, the
/// cursor's column yellow, and the outlier threshold as a dotted red line.
fn draw_bars(
    buf: &mut Buffer,
    area: Rect,
    columns: &[(f64, bool, bool)],
    (floor, top): (f64, f64),
    threshold: Option<f64>,
) {
    let area = area.intersection(buf.area);
    let rows = usize::from(area.height);
    if rows == 0 || !(top > floor && floor > 0.0 && top.is_finite()) {
        return;
    }
    let height = |v: f64| -> usize {
        if v <= 0.0 {
            return 0;
        }
        let h = (v.max(floor) / floor).ln() / (top / floor).ln() * (rows * 8) as f64;
        // Any nonzero channel gets at least a tick.
        (h.round() as usize).clamp(1, rows * 8)
    };
    let line_row = threshold
        .filter(|t| *t > 0.0 && *t <= top)
        .map(|t| height(t).div_ceil(8).saturating_sub(1));
    for (c, &(v, outlier, cursor)) in columns.iter().enumerate() {
        let x = area.x + c as u16;
        if x >= area.right() {
            break;
        }
        let eighths = height(v);
        let color = if cursor {
            Color::Yellow
        } else if outlier {
            Color::Red
        } else {
            Color::Gray
        };
        for r in 0..rows {
            let y = area.bottom() - 1 - r as u16;
            let fill = eighths.saturating_sub(r * 8).min(8);
            let Some(cell) = buf.cell_mut((x, y)) else {
                continue;
            };
            if fill > 0 {
                cell.set_char(EIGHTHS[fill]).set_fg(color);
            } else if line_row == Some(r) {
                cell.set_char('┄').set_fg(Color::Red);
            }
        }
    }
}

/// The granularity rows with the method table's SQNR colours.
fn draw_table(frame: &mut Frame, app: &App, layer: Option<&LayerAnalysis>, area: Rect) {
    let floor = app.opts.thresholds.sqnr_floor_db;
    let title = Line::from(vec![
        Span::raw(" granularities "),
        Span::styled(
            format!(
                "int{} symmetric abs-max per group · SQNR floor {floor:.0} dB ",
                app.opts.bits
            ),
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    let block = panel(title, false, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(layer) = layer else {
        return;
    };
    let wide = inner.width >= 80;
    let row = |label: String, groups: String, m: &Metrics| {
        let sq =
            Cell::from(db_short(m.sqnr_db)).style(Style::new().fg(sqnr_color(m.sqnr_db, floor)));
        let mut cells = vec![Cell::from(label), Cell::from(groups), sq];
        cells.push(Cell::from(num_short(m.mse)));
        if wide {
            cells.push(Cell::from(num_short(m.max_abs_error)));
            cells.push(Cell::from(format!("{:.6}", m.cosine)));
        }
        Row::new(cells)
    };
    let mut rows: Vec<Row> = layer
        .granularities
        .iter()
        .map(|g| row(g.label(), count_short(g.groups), &g.metrics))
        .collect();
    if let Some(f) = layer
        .channels
        .as_ref()
        .and_then(|c| c.outliers_in_float.as_ref())
    {
        rows.push(row(
            "outliers in float".into(),
            format!("{} ch exact", f.channels),
            &f.metrics,
        ));
    }
    let mut header = vec!["granularity", "groups", "SQNR dB", "MSE"];
    let mut widths = vec![
        Constraint::Length(18),
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Length(10),
    ];
    if wide {
        header.extend(["max err", "cosine"]);
        widths.extend([Constraint::Length(10), Constraint::Length(9)]);
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray).bold()))
        .column_spacing(1);
    frame.render_widget(table, inner);
}
