//! The overview: every layer × method SQNR, most sensitive layer first.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Borders, Cell, Row, Table};

use crate::analysis::{FormatKind, Granularity, LayerAnalysis, MethodKind, MethodResult};

use super::status::{draw_header, draw_status};
use super::{fit, panel, short_label, sqnr_color};
use crate::report::fmt::db_short;
use crate::tui::app::App;
use crate::tui::layout;

pub(super) fn draw(frame: &mut Frame, app: &App, size: Rect) {
    let areas = layout::overview_areas(size);
    let body = areas.table;
    draw_header(frame, app, areas.header);
    draw_status(frame, app, areas.status);
    let mut title = vec![Span::raw(" overview ")];
    if !app.names.prefix.is_empty() {
        // The rows show the names without the prefix all of them share.
        title.push(Span::styled(
            format!("· {}… ", app.names.prefix),
            Style::new().fg(Color::Cyan),
        ));
    }
    title.push(Span::styled(
        "· SQNR dB per method and finer scale, most sensitive layer first · ★ best ",
        Style::new().fg(Color::DarkGray),
    ));
    frame.render_widget(panel(Line::from(title), true, Borders::TOP), areas.title);
    let order = app.by_sensitivity();
    let methods = method_columns(app.slots.iter().filter_map(|s| s.result.as_ref()));
    let floor = app.opts.thresholds.sqnr_floor_db;
    let wide = body.width >= 120;
    let col_w: u16 = if wide { 8 } else { 6 };
    // The methods, then the best per-token and best per-block SQNR when there is room for
    // them and a readable layer name (14 columns).
    let finer_cols = |n: u16| 6 + n * col_w + 4 + if wide { n + 4 } else { n + 2 };
    let finer = wide || body.width >= finer_cols(methods.len() as u16 + 2) + 14;
    // Then the best FP8 and best 4-bit format SQNR, when there is room for those too.
    let fmts = finer && (wide || body.width >= finer_cols(methods.len() as u16 + 4) + 14);
    let n_m = methods.len() as u16 + if finer { 2 } else { 0 } + if fmts { 2 } else { 0 };
    // name + best(6) + [method(10) + bar] + methods + warn(3), one space between columns.
    // Columns: name, best, [bar, method], methods..., warn; one space between each.
    let fixed = finer_cols(n_m);
    let longest = (0..app.slots.len())
        .map(|i| app.names.rest(i).chars().count())
        .max()
        .unwrap_or(5)
        .max(5) as u16;
    let (name_w, bar_w) = if wide {
        let name_w = longest.min(40);
        let bar_w = body.width.saturating_sub(fixed + name_w + 10);
        (name_w, bar_w)
    } else {
        (body.width.saturating_sub(fixed).max(8), 0)
    };
    let top_db = order
        .iter()
        .filter_map(|&i| app.slots[i].sensitivity())
        .filter(|v| v.is_finite())
        .fold(60.0_f64, f64::max);
    let h = usize::from(areas.rows.height);
    let first = layout::scroll_start(app.overview_scroll, h, order.len());
    let rows = order
        .iter()
        .enumerate()
        .skip(first)
        .take(h)
        .map(|(pos, &i)| {
            let slot = &app.slots[i];
            let mut cells = vec![Cell::from(app.names.short(i, usize::from(name_w)))];
            match &slot.result {
                None => cells.push(Cell::from("   …").fg(Color::DarkGray)),
                Some(l) if l.error.is_some() => cells.push(Cell::from(" error").fg(Color::Red)),
                Some(l) => {
                    let best = l.sensitivity_sqnr_db.unwrap_or(f64::NAN);
                    cells.push(
                        Cell::from(format!("{:>5} ", db_short(best)))
                            .style(Style::new().fg(Color::Black).bg(sqnr_color(best, floor))),
                    );
                    if wide {
                        let filled = if best.is_finite() && best > 0.0 {
                            ((best / top_db * f64::from(bar_w)).round() as usize)
                                .min(usize::from(bar_w))
                        } else {
                            0
                        };
                        cells.push(Cell::from("▇".repeat(filled)).fg(sqnr_color(best, floor)));
                        cells.push(Cell::from(
                            l.recommended_method().map(short_label).unwrap_or_default(),
                        ));
                    }
                    for m in &methods {
                        let cell = match l.methods.iter().find(|x| same_method(x, m)) {
                            Some(x) => {
                                let v = x.metrics.sqnr_db;
                                let is_best = l.is_recommended(x);
                                let mut st = Style::new().fg(sqnr_color(v, floor));
                                if is_best {
                                    st = st.bold();
                                }
                                let w = usize::from(col_w) - 1;
                                Cell::from(format!(
                                    "{:>w$}{}",
                                    db_short(v),
                                    if is_best { "★" } else { " " }
                                ))
                                .style(st)
                            }
                            None => Cell::from("  —").fg(Color::DarkGray),
                        };
                        cells.push(cell);
                    }
                    let shown: &[Granularity] = if finer {
                        &[Granularity::Token, Granularity::Block]
                    } else {
                        &[]
                    };
                    let w = usize::from(col_w) - 1;
                    let db_cell = |best: Option<f64>| match best {
                        Some(v) => {
                            Cell::from(format!("{:>w$} ", db_short(v))).fg(sqnr_color(v, floor))
                        }
                        None => Cell::from(format!("{:>w$} ", "—")).fg(Color::DarkGray),
                    };
                    for &g in shown {
                        cells.push(db_cell(best_of(l, g)));
                    }
                    if fmts {
                        cells.push(db_cell(best_format(l, FP8)));
                        cells.push(db_cell(best_format(l, FOUR_BIT)));
                    }
                    cells.push(
                        Cell::from(if l.warnings.is_empty() {
                            String::new()
                        } else {
                            format!("⚠{}", l.warnings.len())
                        })
                        .fg(Color::Yellow),
                    );
                }
            }
            let mut row = Row::new(cells);
            if pos == app.overview_scroll {
                row = row.style(Style::new().bg(Color::Blue).bold());
            }
            row
        });
    let mut head: Vec<String> = vec!["layer".into(), " best".into()];
    let mut widths = vec![Constraint::Length(name_w), Constraint::Length(6)];
    if wide {
        head.push(format!("best SQNR (0–{top_db:.0} dB)"));
        head.push("method".into());
        widths.push(Constraint::Length(bar_w));
        widths.push(Constraint::Length(10));
    }
    for m in &methods {
        let label = if wide {
            short_label(m)
        } else {
            match (m.method, m.percentile) {
                (MethodKind::Entropy, _) => "entr".into(),
                (_, Some(p)) => format!("{p}"),
                _ => m.method.name().to_string(),
            }
        };
        let w = usize::from(col_w);
        head.push(format!("{:>w$}", fit(&label, w)));
        widths.push(Constraint::Length(col_w));
    }
    for g in if finer { &["token", "block"][..] } else { &[] } {
        let w = usize::from(col_w);
        head.push(format!("{:>w$}", fit(g, w)));
        widths.push(Constraint::Length(col_w));
    }
    for f in if fmts { &["fp8", "4-bit"][..] } else { &[] } {
        let w = usize::from(col_w);
        head.push(format!("{:>w$}", fit(f, w)));
        widths.push(Constraint::Length(col_w));
    }
    head.push("warn".into());
    widths.push(Constraint::Length(4));
    let table = Table::new(rows, widths)
        .header(Row::new(head).style(Style::new().fg(Color::DarkGray).bold()))
        .column_spacing(1);
    frame.render_widget(table, body);
}

/// Same method and percentile (the comparison `label()` makes, without building strings).
fn same_method(a: &MethodResult, b: &MethodResult) -> bool {
    a.method == b.method && a.percentile == b.percentile
}

/// The overview's method columns: every method any layer has (layers can differ while a
/// re-run with other percentiles is under way, or when a layer failed), in the layers' own
/// order: a method missing so far goes right after the one it follows in its layer.
pub(super) fn method_columns<'a>(
    layers: impl Iterator<Item = &'a LayerAnalysis>,
) -> Vec<MethodResult> {
    let mut out: Vec<MethodResult> = Vec::new();
    for l in layers {
        let mut at = 0;
        for m in &l.methods {
            match out.iter().position(|x| same_method(x, m)) {
                Some(p) => at = p + 1,
                None => {
                    out.insert(at, m.clone());
                    at += 1;
                }
            }
        }
    }
    out
}

/// The best SQNR of the layer's rows of granularity `g` (None: not measured).
fn best_of(l: &LayerAnalysis, g: Granularity) -> Option<f64> {
    l.granularities
        .iter()
        .filter(|r| r.granularity == g && !r.metrics.sqnr_db.is_nan())
        .map(|r| r.metrics.sqnr_db)
        .reduce(f64::max)
}

/// The formats of the overview's best FP8 column.
const FP8: &[FormatKind] = &[FormatKind::Fp8E4m3, FormatKind::Fp8E5m2];
/// The formats of the overview's best 4-bit column.
const FOUR_BIT: &[FormatKind] = &[FormatKind::Mxfp4, FormatKind::Nvfp4];

/// The best SQNR of the layer's format rows of these formats (None: none measured).
fn best_format(l: &LayerAnalysis, kinds: &[FormatKind]) -> Option<f64> {
    l.formats
        .iter()
        .filter(|r| kinds.contains(&r.format) && !r.metrics.sqnr_db.is_nan())
        .map(|r| r.metrics.sqnr_db)
        .reduce(f64::max)
}
