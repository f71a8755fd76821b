//! The main view: the layer list, the histogram with every method's range, the method table
//! and the details (casts, statistics, warnings).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Borders, Cell, Paragraph, Row, Table, Wrap};

use crate::analysis::LayerAnalysis;

use super::status::{draw_header, draw_status};
use super::{
    ClipRow, clip_markers, fit, fp8, int_clip_rows, list_title, method_row, metric_cells, panel,
    short_label, sqnr_color,
};
use crate::analysis::cast::F16_MAX;
use crate::report::fmt::{db_short, num_short, pct_short, shape};
use crate::tui::app::{App, Slot};
use crate::tui::details;
use crate::tui::layout::{self, Focus, MainAreas};
use crate::tui::names::TreeRow;
use crate::tui::widgets::histogram::{HistogramPlot, column_of};

pub(super) fn draw(frame: &mut Frame, app: &App, size: Rect) {
    let a = layout::main_areas(size, app.method_count());
    draw_header(frame, app, a.header);
    draw_layers(frame, app, &a);
    let slot = app.selected_slot();
    let layer = app.selected_layer();
    draw_hist(frame, app, slot, a.hist);
    draw_methods(frame, app, layer, a.methods);
    draw_details(frame, app, layer, &a);
    draw_status(frame, app, a.status);
}

fn draw_layers(frame: &mut Frame, app: &App, a: &MainAreas) {
    let vis = app.visible();
    let title = list_title(
        "layers",
        vis.len(),
        &app.names.prefix,
        &format!("by {}", app.sort.name()),
        a.layers.width.saturating_sub(1),
    );
    let block = panel(
        title,
        app.focus == Focus::Layers,
        Borders::TOP | Borders::RIGHT,
    );
    frame.render_widget(block, a.layers);
    let rows = a.layers_rows;
    if rows.height == 0 || rows.width == 0 {
        return;
    }
    if vis.is_empty() {
        let msg = if app.slots.is_empty() {
            "no layers found"
        } else {
            "no layer matches the filter"
        };
        frame.render_widget(
            Paragraph::new(msg)
                .fg(Color::DarkGray)
                .wrap(Wrap { trim: true }),
            rows,
        );
        return;
    }
    let list = app.list_rows();
    let cursor = app.list_cursor(&list);
    let h = usize::from(rows.height);
    let first = layout::scroll_start(cursor, h, list.len());
    let w = usize::from(rows.width);
    let show_shape = w >= 44;
    let floor = app.opts.thresholds.sqnr_floor_db;
    for (row, r) in list.iter().enumerate().skip(first).take(h) {
        let y = rows.y + (row - first) as u16;
        // One column of indent per tree level.
        let indent = " ".repeat(r.depth());
        let line = match r {
            TreeRow::Layer { slot, label, .. } => layer_row(
                &app.slots[*slot],
                |name_w| {
                    let room = name_w.saturating_sub(indent.len());
                    let name = if app.tree {
                        app.names.fit(label, room)
                    } else {
                        app.names.short(*slot, room)
                    };
                    format!("{indent}{name}")
                },
                w,
                show_shape,
                floor,
                app.progress.running,
            ),
            TreeRow::Group {
                label,
                members,
                open,
                ..
            } => group_row(app, label, members, *open, &indent, w, floor),
        };
        let mut p = Paragraph::new(line);
        if row == cursor {
            p = p.style(if app.focus == Focus::Layers {
                Style::new().bg(Color::Blue).fg(Color::White).bold()
            } else {
                Style::new().bg(Color::DarkGray)
            });
        }
        frame.render_widget(p, Rect::new(rows.x, y, rows.width, 1));
    }
}

/// A group of the tree: its warnings, fold arrow, path part, layer count and its worst layer's
/// badge (errors first, as the sensitivity sort has them).
fn group_row(
    app: &App,
    label: &str,
    members: &[usize],
    open: bool,
    indent: &str,
    w: usize,
    floor: f64,
) -> Line<'static> {
    let slots = members.iter().filter_map(|&i| app.slots.get(i));
    let warnings: usize = slots.clone().map(Slot::warnings).sum();
    let errored = slots.clone().any(Slot::errored);
    let worst = slots
        .filter_map(Slot::sensitivity)
        .filter(|v| !v.is_nan())
        .reduce(f64::min);
    let (mark, mark_style) = if warnings > 0 {
        (
            format!("⚠{}", warnings.min(9)),
            Style::new().fg(Color::Yellow).bold(),
        )
    } else {
        (String::new(), Style::new())
    };
    let (badge, badge_style) = match (errored, worst) {
        (true, _) => ("error".to_string(), Style::new().fg(Color::Red)),
        (false, Some(v)) => (
            format!("{:>5}", db_short(v)),
            Style::new().fg(Color::Black).bg(sqnr_color(v, floor)),
        ),
        (false, None) => ("  ·  ".to_string(), Style::new().fg(Color::DarkGray)),
    };
    let arrow = if open { '▾' } else { '▸' };
    let count = format!(" ({})", members.len());
    // The badge in the layer rows' column: mark (3) + name + space + badge (5), one spare.
    let name_w = w.saturating_sub(3 + 5 + 2);
    let room = name_w.saturating_sub(indent.len() + 1 + count.len());
    let text = format!("{indent}{arrow}{}", app.names.fit(label, room));
    let pad = name_w.saturating_sub(text.chars().count() + count.len());
    Line::from(vec![
        Span::styled(format!("{mark:<3}"), mark_style),
        Span::styled(text, Style::new().bold()),
        Span::styled(count, Style::new().fg(Color::DarkGray)),
        Span::raw(" ".repeat(pad + 1)),
        Span::styled(badge, badge_style),
    ])
}

/// `name(w)`: the row's name in `w` columns.
fn layer_row(
    slot: &Slot,
    name: impl FnOnce(usize) -> String,
    w: usize,
    show_shape: bool,
    floor: f64,
    running: bool,
) -> Line<'static> {
    // Mark (3) + name + [shape] + badge (5).
    let (mark, mark_style) = match &slot.result {
        None if running => ("…".to_string(), Style::new().fg(Color::DarkGray)),
        None => (String::new(), Style::new()),
        Some(r) if r.error.is_some() => ("✖".to_string(), Style::new().fg(Color::Red)),
        Some(r) if r.warnings.is_empty() => (String::new(), Style::new()),
        Some(r) => (
            format!("⚠{}", r.warnings.len().min(9)),
            Style::new().fg(Color::Yellow).bold(),
        ),
    };
    let (badge, badge_style) = match &slot.result {
        None => ("  ·  ".to_string(), Style::new().fg(Color::DarkGray)),
        Some(r) if r.error.is_some() => ("error".to_string(), Style::new().fg(Color::Red)),
        Some(r) => match r.sensitivity_sqnr_db {
            Some(v) => (
                format!("{:>5}", db_short(v)),
                Style::new().fg(Color::Black).bg(sqnr_color(v, floor)),
            ),
            None => ("  —  ".to_string(), Style::new().fg(Color::DarkGray)),
        },
    };
    let badge_style = if slot.stale {
        badge_style.add_modifier(Modifier::DIM)
    } else {
        badge_style
    };
    let shape_txt = if show_shape {
        slot.result
            .as_ref()
            .filter(|r| !r.shape.is_empty())
            .map(|r| shape(&r.shape))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let shape_w = if show_shape { 12 } else { 0 };
    let name_w = w.saturating_sub(3 + 5 + 2 + shape_w);
    let name = name(name_w);
    let mut spans = vec![
        Span::styled(format!("{mark:<3}"), mark_style),
        Span::raw(format!("{name:<name_w$} ")),
    ];
    if show_shape {
        spans.push(Span::styled(
            format!("{:>11} ", fit(&shape_txt, 11)),
            Style::new().fg(Color::DarkGray),
        ));
    }
    spans.push(Span::styled(badge, badge_style));
    Line::from(spans)
}

/// The x range shown: the data range, or (zoom) the narrowest row's range with a quarter of
/// its width as margin on each side — the bulk of the data, where the clipping methods differ.
/// Markers outside the view are listed at its edges.
fn view_range(app: &App, layer: &LayerAnalysis, rows: &[ClipRow]) -> Option<(f64, f64)> {
    let p = layer.profile.as_ref()?;
    let (dlo, dhi) = (p.hist.lo, p.hist.hi);
    if !(dlo.is_finite() && dhi.is_finite()) || dhi <= dlo {
        return None;
    }
    if !app.zoom {
        return Some((dlo, dhi));
    }
    let narrowest = rows
        .iter()
        .map(|r| (r.range[0], r.range[1]))
        .filter(|(a, b)| a.is_finite() && b.is_finite() && b > a)
        .min_by(|x, y| (x.1 - x.0).total_cmp(&(y.1 - y.0)));
    let Some((lo, hi)) = narrowest else {
        return Some((dlo, dhi));
    };
    let pad = (hi - lo) * 0.25;
    let (lo, hi) = ((lo - pad).max(dlo), (hi + pad).min(dhi));
    if hi > lo {
        Some((lo, hi))
    } else {
        Some((dlo, dhi))
    }
}

fn draw_hist(frame: &mut Frame, app: &App, slot: Option<&Slot>, area: Rect) {
    let Some(slot) = slot else {
        frame.render_widget(panel(Line::from(" histogram "), false, Borders::TOP), area);
        return;
    };
    let layer = slot.result.as_ref();
    // The title shares its line with the mode drawn at the right end.
    let mode = mode_label(app);
    let room = usize::from(area.width).saturating_sub(mode.chars().count() + 3);
    let name = match app.selected {
        Some(i) => app.names.full(i, room.saturating_sub(2)),
        None => String::new(),
    };
    let mut used = name.chars().count() + 2;
    let mut title = vec![Span::styled(
        format!(" {name} "),
        Style::new().add_modifier(Modifier::BOLD).fg(Color::White),
    )];
    if let Some(l) = layer
        && l.error.is_none()
    {
        let extra = format!("{} {} ", shape(&l.shape), l.dtype);
        if used + extra.chars().count() <= room {
            used += extra.chars().count();
            title.push(Span::styled(extra, Style::new().fg(Color::DarkGray)));
        }
    }
    if slot.stale && used + 14 <= room {
        title.push(Span::styled("recomputing… ", Style::new().fg(Color::Cyan)));
    }
    let block = panel(Line::from(title), false, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.height == 0 || inner.width == 0 {
        return;
    }
    let Some(layer) = layer else {
        // Passes 1–2 done: the histogram is known before the methods are measured.
        if let Some(p) = &slot.profile
            && p.hist.lo.is_finite()
            && p.hist.hi > p.hist.lo
        {
            let [plot, axis, note] = Layout::vertical([
                Constraint::Min(1),
                Constraint::Length(1),
                Constraint::Length(1),
            ])
            .areas(inner);
            frame.render_widget(
                HistogramPlot {
                    hist: &p.hist,
                    lo: p.hist.lo,
                    hi: p.hist.hi,
                    log: app.log_scale,
                    markers: &[],
                    keep: None,
                },
                plot,
            );
            draw_axis(frame, axis, p.hist.lo, p.hist.hi);
            frame.render_widget(
                Paragraph::new("measuring every method's error (pass 3)…").fg(Color::Cyan),
                note,
            );
            return;
        }
        let msg = if app.progress.running {
            "analysing… the histogram appears after the first two passes"
        } else {
            "not analysed"
        };
        let mid = Rect {
            y: inner.y + inner.height / 2,
            height: 1,
            ..inner
        };
        frame.render_widget(Paragraph::new(msg).fg(Color::DarkGray).centered(), mid);
        return;
    };
    if let Some(e) = &layer.error {
        // Methods beside an error: ranges from a kept profile whose values are gone.
        let head = if layer.methods.is_empty() {
            "this layer could not be analysed"
        } else {
            "ranges only: their error could not be measured"
        };
        let text = vec![
            Line::from(head.red().bold()),
            Line::from(""),
            Line::from(e.clone()),
        ];
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), inner);
        return;
    }
    // The method table's rows in the number format shown (`x`): their clip points.
    let rows = match app.number_format {
        None => int_clip_rows(&layer.methods),
        Some(_) => fp8::clip_rows(&app.fp8_rows()),
    };
    let (Some(profile), Some((lo, hi))) = (&layer.profile, view_range(app, layer, &rows)) else {
        let msg = if layer.stats.as_ref().is_some_and(|s| s.finite == 0) {
            "no finite values: nothing to plot"
        } else {
            "no histogram"
        };
        frame.render_widget(Paragraph::new(msg).fg(Color::DarkGray), inner);
        return;
    };
    // Rows: plot, axis, legend (when there is room).
    let legend_h = u16::from(inner.height >= 9);
    let [plot, axis, legend] = Layout::vertical([
        Constraint::Min(1),
        Constraint::Length(1),
        Constraint::Length(legend_h),
    ])
    .areas(inner);
    let sel = app.method_index();
    let markers = clip_markers(&rows, sel);
    let keep = sel
        .and_then(|i| rows.get(i))
        .map(|r| (r.range[0], r.range[1]));
    frame.render_widget(
        HistogramPlot {
            hist: &profile.hist,
            lo,
            hi,
            log: app.log_scale,
            markers: &markers,
            keep,
        },
        plot,
    );
    draw_axis(frame, axis, lo, hi);
    if legend_h > 0 {
        draw_legend(frame, &rows, sel, legend, lo, hi);
    }
    let mw = (mode.chars().count() as u16).min(area.width);
    frame.render_widget(
        Paragraph::new(mode).fg(Color::Cyan),
        Rect::new(area.right() - mw, area.y, mw, 1),
    );
}

/// The histogram's mode for the top-right corner of its block: the number format (FP8 view
/// only), the count scale and the view.
fn mode_label(app: &App) -> String {
    let format = app
        .number_format
        .map(|k| format!(" {} ·", k.name()))
        .unwrap_or_default();
    format!(
        "{format} {} · {} ",
        if app.log_scale { "log" } else { "linear" },
        if app.zoom { "zoom" } else { "full" }
    )
}

pub(super) fn draw_axis(frame: &mut Frame, area: Rect, lo: f64, hi: f64) {
    let w = usize::from(area.width);
    if w == 0 {
        return;
    }
    let mut chars: Vec<char> = vec!['─'; w];
    let put = |at: usize, s: &str, chars: &mut Vec<char>| {
        let s: Vec<char> = s.chars().collect();
        let start = at.min(w.saturating_sub(s.len()));
        for (k, c) in s.into_iter().enumerate() {
            if let Some(slot) = chars.get_mut(start + k) {
                *slot = c;
            }
        }
    };
    let left = num_short(lo);
    let right = num_short(hi);
    put(0, &left, &mut chars);
    put(w.saturating_sub(right.chars().count()), &right, &mut chars);
    if let Some(c) = column_of(0.0, lo, hi, w) {
        let label = "┴0";
        let l0 = left.chars().count() + 1;
        let r0 = w.saturating_sub(right.chars().count() + 3);
        if c > l0 && c < r0 {
            put(c, label, &mut chars);
        }
    }
    let s: String = chars.into_iter().collect();
    frame.render_widget(Paragraph::new(s).fg(Color::DarkGray), area);
}

fn draw_legend(
    frame: &mut Frame,
    rows: &[ClipRow],
    sel: Option<usize>,
    area: Rect,
    lo: f64,
    hi: f64,
) {
    let mut spans = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let style = Style::new().fg(r.color);
        let style = if sel == Some(i) {
            style.add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        } else {
            style
        };
        spans.push(Span::styled(
            r.tag.to_string(),
            style.add_modifier(Modifier::BOLD),
        ));
        spans.push(Span::styled(format!(" {}  ", r.label), style));
    }
    if lo <= -F16_MAX || hi >= F16_MAX {
        spans.push(Span::styled(
            format!("╎ fp16 ±{F16_MAX}  "),
            Style::new().fg(Color::LightRed),
        ));
    }
    if sel.is_some() {
        spans.push(Span::styled("▇ clipped", Style::new().fg(Color::Red)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn draw_methods(frame: &mut Frame, app: &App, layer: Option<&LayerAnalysis>, area: Rect) {
    if let Some(kind) = app.number_format {
        fp8::draw_table(frame, app, kind, layer, area);
        return;
    }
    let focused = app.focus == Focus::Methods;
    // With a held-out validation (`--validate`) the star follows it and two columns show it.
    let v = layer.and_then(|l| l.validation.as_ref());
    let title = Line::from(vec![
        Span::raw(" methods "),
        Span::styled(
            format!(
                "{} {}-bit · ★ best {}SQNR ",
                app.opts.scheme.name(),
                app.opts.bits,
                if v.is_some() { "held-out " } else { "" }
            ),
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    let block = panel(title, focused, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(layer) = layer.filter(|l| !l.methods.is_empty()) else {
        return;
    };
    let wide = inner.width >= 96;
    let sel = app.method_index();
    let floor = app.opts.thresholds.sqnr_floor_db;
    let mut header: Vec<&str> = if wide {
        vec![
            "", "method", "lo", "hi", "scale", "zp", "clip↓%", "clip↑%", "MSE", "SQNR dB", "cosine",
        ]
    } else {
        vec!["", "method", "lo", "hi", "clip%", "SQNR", "cos"]
    };
    if v.is_some() {
        header.extend(["h-o dB", "h-o clip%"]);
    }
    let marks = int_clip_rows(&layer.methods);
    // The rows that fit below the header, scrolled to keep the selection in view.
    let h = usize::from(inner.height.saturating_sub(1));
    let first = layout::scroll_start(sel.unwrap_or(0), h, layer.methods.len());
    let rows = layer
        .methods
        .iter()
        .enumerate()
        .skip(first)
        .take(h)
        .map(|(i, m)| {
            let (tag, color) = marks
                .get(i)
                .map_or((' ', Color::Reset), |r| (r.tag, r.color));
            let star = if layer.is_recommended(m) { "★" } else { " " };
            let name = format!("{star}{}", short_label(m));
            let mut cells = vec![
                Cell::from(tag.to_string()).style(Style::new().fg(color).bold()),
                Cell::from(name).style(Style::new().fg(color)),
                Cell::from(num_short(m.range[0])),
                Cell::from(num_short(m.range[1])),
            ];
            if wide {
                cells.extend([
                    Cell::from(num_short(m.scale)),
                    Cell::from(m.zero_point.to_string()),
                ]);
            }
            cells.extend(metric_cells(&m.metrics, floor, wide));
            if let Some(v) = v {
                let h = v.method(&m.label()).map(|h| &h.heldout);
                cells.extend([
                    h.map_or(Cell::from("-"), |h| {
                        Cell::from(db_short(h.sqnr_db))
                            .style(Style::new().fg(sqnr_color(h.sqnr_db, floor)))
                    }),
                    Cell::from(h.map_or("-".to_string(), |h| pct_short(h.clipped_fraction))),
                ]);
            }
            method_row(cells, sel == Some(i), focused)
        });
    let mut widths: Vec<Constraint> = if wide {
        vec![
            Constraint::Length(1),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(9),
        ]
    } else {
        vec![
            Constraint::Length(1),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(6),
        ]
    };
    if v.is_some() {
        widths.extend([Constraint::Length(6), Constraint::Length(9)]);
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray).bold()))
        .column_spacing(1);
    frame.render_widget(table, inner);
}

fn draw_details(frame: &mut Frame, app: &App, layer: Option<&LayerAnalysis>, a: &MainAreas) {
    let focused = app.focus == Focus::Details;
    let nwarn = layer.map_or(0, |l| l.warnings.len());
    let content = layer
        .filter(|l| l.error.is_none() || l.stats.is_some())
        .map(|l| details::details(l, a.details_text));
    let mut title = vec![
        Span::raw(" casts · stats · warnings "),
        Span::styled(
            format!("{nwarn} "),
            if nwarn > 0 {
                Style::new().fg(Color::Yellow).bold()
            } else {
                Style::new().fg(Color::DarkGray)
            },
        ),
    ];
    let scroll = content
        .as_ref()
        .map_or(0, |c| app.details_scroll.min(c.max_scroll()));
    if let Some(c) = &content {
        // Where the scrolled text stands, when it does not fit.
        let below = c.max_scroll() - scroll;
        if c.max_scroll() > 0 {
            let arrows = match (scroll > 0, below > 0) {
                (true, true) => "↑↓",
                (true, false) => "↑",
                _ => "↓",
            };
            title.push(Span::styled(
                format!("· {arrows} {}/{} ", scroll + c.height, c.scrolled.len()),
                Style::new().fg(Color::Cyan),
            ));
        }
    }
    frame.render_widget(panel(Line::from(title), focused, Borders::TOP), a.details);
    let Some(c) = content else { return };
    if let Some(left) = c.fixed_area {
        frame.render_widget(Paragraph::new(c.fixed.clone()), left);
    }
    let shown: Vec<Line> = c
        .scrolled
        .iter()
        .skip(scroll)
        .take(c.height)
        .cloned()
        .collect();
    frame.render_widget(Paragraph::new(shown), c.scrolled_area);
}
