//! The main view in an FP8 number format (`x`): the histogram's markers at each per-tensor row's
//! ±amax and the method table of that format's rows (README "Formats"), in the int view's
//! letters and colours.

use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Borders, Cell, Paragraph, Row, Table, Wrap};

use super::{ClipRow, marks, method_row, metric_cells, panel, short_name};
use crate::analysis::{FormatKind, FormatResult, LayerAnalysis};
use crate::report::fmt::{count_short, num_short};
use crate::tui::app::App;
use crate::tui::layout::{self, Focus};

/// The rows' clip points: a per-tensor FP8 row clamps at ±amax.
pub fn clip_rows(rows: &[&FormatResult]) -> Vec<ClipRow> {
    let names = rows.iter().map(|r| r.method.as_deref().unwrap_or_default());
    rows.iter()
        .zip(marks(names))
        .map(|(r, (tag, color))| {
            let a = r.amax.unwrap_or(f64::NAN);
            ClipRow {
                range: [-a, a],
                tag,
                color,
                label: label(r),
            }
        })
        .collect()
}

/// `minmax`, `mse_fp8`, `p99.9`.
fn label(r: &FormatResult) -> String {
    short_name(r.method.as_deref().unwrap_or("?"), r.percentile)
}

/// What an unclamped cast to `kind` writes past its largest finite value.
fn nonfinite_name(kind: FormatKind) -> &'static str {
    match kind {
        FormatKind::Fp8E4m3 => "NaN",
        _ => "±inf",
    }
}

/// The method table of `kind`'s per-tensor rows, or why the layer has none.
pub(super) fn draw_table(
    frame: &mut Frame,
    app: &App,
    kind: FormatKind,
    layer: Option<&LayerAnalysis>,
    area: Rect,
) {
    let focused = app.focus == Focus::Methods;
    let title = Line::from(vec![
        Span::raw(" methods · "),
        Span::styled(kind.name(), Style::new().fg(Color::Cyan).bold()),
        Span::styled(
            " · ±amax per tensor · ★ best SQNR ",
            Style::new().fg(Color::DarkGray),
        ),
    ]);
    let block = panel(title, focused, Borders::TOP);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let Some(layer) = layer else { return };
    let rows = app.fp8_rows();
    if rows.is_empty() {
        let why = if layer.error.is_some() {
            format!("no {} rows: this layer could not be analysed", kind.name())
        } else {
            format!(
                "this layer has no per-tensor {} rows (x switches back to int)",
                kind.name()
            )
        };
        frame.render_widget(
            Paragraph::new(why)
                .fg(Color::DarkGray)
                .wrap(Wrap { trim: true }),
            inner,
        );
        return;
    }
    let wide = inner.width >= 96;
    let sel = app.method_index();
    let star = app.best_fp8_row();
    let floor = app.opts.thresholds.sqnr_floor_db;
    let marks = clip_rows(&rows);
    let bad = nonfinite_name(kind);
    let (mut header, mut widths): (Vec<String>, Vec<u16>) = if wide {
        (
            [
                "", "method", "amax", "scale", "clip↓%", "clip↑%", "MSE", "SQNR dB", "cosine",
            ]
            .map(String::from)
            .to_vec(),
            vec![1, 10, 10, 10, 7, 7, 10, 8, 9],
        )
    } else {
        (
            ["", "method", "amax", "scale", "clip%", "SQNR", "cos"]
                .map(String::from)
                .to_vec(),
            vec![1, 9, 8, 8, 5, 5, 6],
        )
    };
    // The unclamped-cast count where it fits (one space between columns).
    let count_w: u16 = if wide { 14 } else { 5 };
    let used: u16 = widths.iter().map(|w| w + 1).sum();
    let count = used + count_w <= inner.width;
    if count {
        header.push(if wide {
            format!("unclamped {bad}")
        } else {
            bad.to_string()
        });
        widths.push(count_w);
    }
    // The rows that fit below the header, scrolled to keep the selection in view.
    let h = usize::from(inner.height.saturating_sub(1));
    let first = layout::scroll_start(sel.unwrap_or(0), h, rows.len());
    let table_rows = rows.iter().enumerate().skip(first).take(h).map(|(i, r)| {
        let (tag, color, name) = marks
            .get(i)
            .map_or((' ', Color::Reset, String::new()), |m| {
                (m.tag, m.color, m.label.clone())
            });
        // amax 0 is an exact row without a scale.
        let scale = r
            .scale()
            .filter(|s| *s > 0.0)
            .map_or_else(|| "—".into(), num_short);
        let mut cells = vec![
            Cell::from(tag.to_string()).style(Style::new().fg(color).bold()),
            Cell::from(format!("{}{name}", if star == Some(i) { "★" } else { " " }))
                .style(Style::new().fg(color)),
            Cell::from(r.amax.map_or_else(|| "—".into(), num_short)),
            Cell::from(scale),
        ];
        cells.extend(metric_cells(&r.metrics, floor, wide));
        if count {
            cells.push(match r.unclamped_nonfinite {
                Some(0) => Cell::from("0"),
                Some(k) => Cell::from(count_short(k)).fg(Color::Red),
                None => Cell::from("—").fg(Color::DarkGray),
            });
        }
        method_row(cells, sel == Some(i), focused)
    });
    let table = Table::new(table_rows, widths.into_iter().map(Constraint::Length))
        .header(Row::new(header).style(Style::new().fg(Color::DarkGray).bold()))
        .column_spacing(1);
    frame.render_widget(table, inner);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::formats::{FormatGranularity, MSE_FP8};
    use crate::analysis::metrics::Metrics;

    fn row(method: &str, percentile: Option<f64>, amax: f64) -> FormatResult {
        FormatResult {
            format: FormatKind::Fp8E4m3,
            granularity: FormatGranularity::Tensor,
            block_size: None,
            method: Some(method.into()),
            percentile,
            scale_rule: None,
            amax: Some(amax),
            metrics: Metrics::UNMEASURED,
            unclamped_nonfinite: Some(0),
        }
    }

    /// Each row's markers sit at ±amax, lettered as the int view letters the same calibrator;
    /// the FP8 search has its own letter and colour.
    #[test]
    fn fp8_clip_points_are_plus_minus_amax_with_the_int_letters() {
        let rows = [
            row("minmax", None, 260.0),
            row("ema", None, 171.5),
            row("entropy", None, 150.0),
            row("mse", None, 202.0),
            row(MSE_FP8, None, 240.0),
            row("percentile", Some(99.9), 8.5),
            row("percentile", Some(99.99), 12.25),
        ];
        let refs: Vec<&FormatResult> = rows.iter().collect();
        let got = clip_rows(&refs);
        let ranges: Vec<[f64; 2]> = got.iter().map(|r| r.range).collect();
        assert_eq!(
            ranges,
            [
                [-260.0, 260.0],
                [-171.5, 171.5],
                [-150.0, 150.0],
                [-202.0, 202.0],
                [-240.0, 240.0],
                [-8.5, 8.5],
                [-12.25, 12.25]
            ]
        );
        let tags: String = got.iter().map(|r| r.tag).collect();
        assert_eq!(tags, "MAHSF12");
        let labels: Vec<&str> = got.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "minmax", "ema", "entropy", "mse", "mse_fp8", "p99.9", "p99.99"
            ]
        );
        // The FP8 search's colour is none of the others'.
        let f = got[4].color;
        assert!(got.iter().enumerate().all(|(i, r)| i == 4 || r.color != f));
        // The percentiles' colours follow their order, as in the int view.
        assert_eq!(got[5].color, Color::Magenta);
        assert_eq!(got[6].color, Color::LightMagenta);
    }
}
